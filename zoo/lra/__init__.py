"""Long Range Arena: loaders for the official files, tokenisers, caches and offline generators."""
