"""Test building blocks shared by the server, client and integration tests."""
