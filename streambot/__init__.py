"""StreamBot: send a file to a Telegram bot, get a seekable HTTP link."""

__version__ = "0.1.0"
