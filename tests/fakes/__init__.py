"""Fake provider servers for tests: a raw HTTP/1.1 framework (``httpserver``) and one
module per provider protocol, each speaking the documented API over loopback."""
