"""Test support shared by several test areas (servers, process stacks)."""
