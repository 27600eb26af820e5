"""What several modules share: readers of signature folders and labelled pages, ink maps, form printing, samplers."""
