"""callbridge: a Twilio phone number in, a voice AI agent out."""

__version__ = "0.1.0"
