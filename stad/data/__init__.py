"""stad.data"""
