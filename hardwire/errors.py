"""User-facing errors: one paragraph naming the problem, exit code 2, no traceback (but --debug)."""

__all__ = ["HardwireError", "ModelFormatError", "ConfigError", "ToolchainError"]


class HardwireError(Exception):
    """An error caused by the user's input or environment, reported without a traceback.

    The message must name what is wrong (file, tensor, field, key) and, where it applies, what was
    expected and what was found.
    """

    exit_code = 2


class ModelFormatError(HardwireError):
    """A model file is unreadable, inconsistent or describes something hardwire cannot map."""

    def __init__(self, path, problem, *, field=None, expected=None, found=None):
        self.path = str(path)
        self.problem = problem
        self.field = field
        self.expected = expected
        self.found = found
        parts = [f"{self.path}:"]
        if field is not None:
            parts.append(f"{field}:")
        parts.append(problem)
        if expected is not None or found is not None:
            parts.append(f"(expected {expected}, found {found})")
        super().__init__(" ".join(parts))


class ConfigError(HardwireError):
    """A compile/hardware option or configuration file is invalid."""


class ToolchainError(HardwireError):
    """A required external tool (Verilator, yosys, a C++ compiler) is missing or broken."""
