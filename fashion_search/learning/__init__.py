"""The learning loop: shoppers' feedback, judgements made of it, and when to retrain."""
