"""The EC2 operations the market layer answers itself, one module each.

Each module has ``handle(layer, request, environ)``, which returns the reply or None
to let moto answer (see :data:`spotfleet_sim.dispatch.HANDLERS`).
"""
