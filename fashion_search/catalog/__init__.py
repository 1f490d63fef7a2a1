"""Product catalog: schema migrations, repository, and dataset loading."""
