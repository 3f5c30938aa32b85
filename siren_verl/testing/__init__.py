"""Helpers shared by the test suites (tiny models and batches built locally; nothing downloaded)."""
