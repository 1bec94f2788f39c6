"""A small real Django project for the framework tests: auth, sessions, the admin, and a view on the ORM.

Its sqlite database lives wherever ``FW_DJANGO_DB`` points (a test's temporary folder); the test runs
``django-admin migrate`` and ``createsuperuser`` against it before it starts clusterrun.
"""
