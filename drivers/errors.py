"""Errors a driver raises for a request it cannot carry out (the outputs are left as they were)."""


class InvalidCommand(ValueError):
    """The request's values are wrong: out of range, not a number, or zero where motion needs a speed."""


class Unsupported(Exception):
    """The hardware as configured cannot do this (e.g. GoTo without an encoder)."""
