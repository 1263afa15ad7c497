"""What the tests share besides fixtures: factories, fake engines, tiny models, process and
socket helpers. Fixtures live in tests/conftest.py."""
