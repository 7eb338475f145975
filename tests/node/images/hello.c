/*
 * The real-node tests' container image: one static binary, so that the image needs no base
 * layer, no package manager and no image builder (hack/node.sh image-archive packs it).
 *
 *   hello                     print a greeting and the Pod's identity, exit 0
 *   hello alloc MB            allocate and touch MB megabytes, then exit 0 (OOM-kill test)
 *   hello connect HOST PORT [TEXT]
 *                             connect over TCP, send TEXT (default "ping\n"), print the reply
 *                             up to the first blank line or EOF; exit 1 if the connect fails
 *   hello sleep SECONDS       sleep (a Pod that stays Running)
 *   hello write PATH TEXT     write TEXT and a newline to PATH (volume tests)
 *
 * No DNS: HOST is a dotted IPv4 address.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int hello(void) {
    const char *pod = getenv("POD_NAME");
    printf("hello from mendel (pod %s)\n", pod ? pod : "?");
    return 0;
}

static int alloc(long megabytes) {
    const long chunk = 1L << 20;
    for (long i = 0; i < megabytes; i++) {
        char *p = malloc(chunk);
        if (p == NULL) {
            fprintf(stderr, "malloc failed after %ld MB\n", i);
            return 2;
        }
        memset(p, 1, chunk); /* touch every page, or the kernel never charges it */
    }
    printf("allocated %ld MB\n", megabytes);
    return 0;
}

static int connect_to(const char *host, int port, const char *text) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "not an IPv4 address: %s\n", host);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    if (write(fd, text, strlen(text)) < 0) {
        perror("write");
        return 1;
    }
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf - 1)) > 0) {
        buf[n] = '\0';
        fputs(buf, stdout);
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) break;
    }
    printf("\nconnected to %s:%d\n", host, port);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return hello();
    if (strcmp(argv[1], "alloc") == 0 && argc == 3) return alloc(atol(argv[2]));
    if (strcmp(argv[1], "connect") == 0 && (argc == 4 || argc == 5))
        return connect_to(argv[2], atoi(argv[3]), argc == 5 ? argv[4] : "ping\n");
    if (strcmp(argv[1], "write") == 0 && argc == 4) {
        FILE *f = fopen(argv[2], "w");
        if (f == NULL || fprintf(f, "%s\n", argv[3]) < 0 || fclose(f) != 0) {
            perror(argv[2]);
            return 1;
        }
        printf("wrote %s\n", argv[2]);
        return 0;
    }
    if (strcmp(argv[1], "sleep") == 0 && argc == 3) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    fprintf(stderr, "usage: hello [alloc MB | connect HOST PORT [TEXT] | sleep SECONDS | write PATH TEXT]\n");
    return 2;
}
