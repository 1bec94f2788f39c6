"""A package of test apps, for ``package.module:attr`` APP specs."""
