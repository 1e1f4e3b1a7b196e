"""Test support: fakes of the hardware edge and harnesses, one copy of each helper."""
