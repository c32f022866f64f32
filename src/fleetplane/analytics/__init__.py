"""Analytics: reports over a customer's devices (engine hours, idling, speeding, fuel...), as
JSON, CSV, XLSX or a chart."""
