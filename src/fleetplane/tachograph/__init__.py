"""Tachograph: driver card and vehicle unit files, activities and driving-time compliance."""
