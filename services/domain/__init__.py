"""Pure domain logic: imports only the standard library and pydantic."""
