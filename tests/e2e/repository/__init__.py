"""The documentation as a reader meets it: the walk-throughs run as written, the site in a browser."""
