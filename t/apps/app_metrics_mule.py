"""A mule of the application-metrics tests: counts 50 ticks, then idles."""
from app_metrics import mule_loop

mule_loop(50)
