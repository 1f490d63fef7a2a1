"""fashion-search core: settings, catalog, storage and dataset code shared by every service."""
