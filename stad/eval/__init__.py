"""stad.eval"""
