"""newsdesk's tests (a package, so that the tests and the benchmarks share tests.support)."""
