"""stad.tubes"""
