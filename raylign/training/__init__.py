"""Training data and losses: pair and KTO building, DPO/KTO/MODPO losses, sequences, weight transfer."""
