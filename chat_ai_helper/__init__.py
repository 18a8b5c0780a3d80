"""Talk to OpenAI-compatible chat-completion APIs from Org Babel and the shell."""

__version__ = "0.1.0"
