"""Tests of the wire package: topics, codec, keys."""
