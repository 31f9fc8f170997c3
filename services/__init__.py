"""sinergi stream processors, domain logic and CLI."""
