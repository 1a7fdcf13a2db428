"""tests/ha: a real `hatchway up --ha` cluster."""
