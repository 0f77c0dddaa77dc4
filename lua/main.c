/* main.c — placeholder until the Lua front end lands. */
int main(void) { return 0; }
