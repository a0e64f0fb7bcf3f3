"""The `spotfleet` toolbox: the command line, its input loaders, the demo and the
local control plane. Imports the operator, the engine and the stand-in cloud; nothing
imports it back."""
