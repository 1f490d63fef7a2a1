"""Product search: text, image and similar-product queries over the catalog."""
