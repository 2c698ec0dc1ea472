"""worldmill tests."""
