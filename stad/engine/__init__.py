"""stad.engine"""
