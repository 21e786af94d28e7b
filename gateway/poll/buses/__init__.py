"""The bus types Canopy ships, one module each; importing a module registers its type.

A new bus type is a module here that ends with ``BUS_TYPE = register(BusType(...))``
plus its name in the import below (docs/architecture.md, *add a bus type*).
"""

from gateway.poll.buses import modbus_rtu, modbus_tcp, serial_line  # noqa: F401 - importing registers them
