"""stad.viz"""
