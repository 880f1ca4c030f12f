"""Market-data publishers (ITCH 5.0 over MoldUDP64)."""
