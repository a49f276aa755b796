"""stellar-ray."""
