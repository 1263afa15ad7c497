"""Training and compression recipes, one file each with main(). No Django here."""
