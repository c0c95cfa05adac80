"""Test support that ships with the tests, not with the package users install."""
