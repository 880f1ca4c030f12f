"""Operator tools: the ``ringex`` command and its subcommands."""
