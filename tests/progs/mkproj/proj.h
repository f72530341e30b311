/* mkproj: the functions each object file provides. */
unsigned alpha(unsigned x);
unsigned beta(unsigned x);
unsigned gamma_(unsigned x);
unsigned delta(unsigned x);
unsigned epsilon(unsigned x);
