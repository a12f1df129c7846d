"""susee: SUpervisor System for Energy Efficiency.

Reads energy meters over Modbus on a clock-aligned sampling grid and stores
every sample, with a quality code and a sampling delay, in MariaDB or SQLite.
"""

__version__ = "0.1.0"
