"""callvault: sealed telephony credentials and the call recordings pulled with them."""

__version__ = "0.1.0"
