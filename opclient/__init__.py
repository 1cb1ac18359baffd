"""A client of the operator API that signs every request exactly as Ocean's Provider does.

It depends on eth-account alone, never on the service's code, so it can ship on its own.
"""
