raise ImportError("this plugin needs a package that is not installed (on purpose, for the tests)")
