/*
 * sys.h - the $SYS/broker/... figures (sys.c).
 */
#ifndef STARLING_BROKER_SYS_H
#define STARLING_BROKER_SYS_H

#include "internal.h"

/* Publish the $SYS/broker/... figures (retained). */
void sys_publish(struct broker *b);

#endif
