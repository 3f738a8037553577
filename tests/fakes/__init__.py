"""Test doubles. Nothing here is used by patchsim itself."""
