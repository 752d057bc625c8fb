"""Readers that turn a model file into a :class:`~hardwire.gen.model.LoadedModel`."""
