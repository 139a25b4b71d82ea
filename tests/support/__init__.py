"""What every test group shares: services, receivers, daemons."""
