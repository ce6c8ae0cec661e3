#!/usr/bin/perl
# Verify the DKIM signatures of a message with Perl's Mail::DKIM, an implementation independent
# of dkimpy. Public keys come from a zone file (lines `NAME IN TXT "..." "..."`, as
# mta.dkim_keys.write_keypair prints them) through a resolver that answers from it: the only
# seam is Mail::DKIM::DNS::resolver(); Net::DNS parses the records, Mail::DKIM joins the strings.
#
# Usage: perl mail_dkim_verify.pl ZONEFILE < MESSAGE
# Prints one line per signature: "SIGNATURE d=DOMAIN s=SELECTOR a=ALGORITHM RESULT_DETAIL",
# then "RESULT OVERALL_RESULT_DETAIL". Exits 0 when it could run the verifier.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

package ZoneResolver;

sub new {
    my ($class, $path) = @_;
    my %records;
    open my $zone, '<', $path or die "cannot open $path: $!\n";
    while (my $line = <$zone>) {
        next unless $line =~ /\S/;
        my $rr = Net::DNS::RR->new($line);
        push @{ $records{ lc $rr->owner } }, $rr;
    }
    close $zone;
    return bless { records => \%records, error => 'NOERROR' }, $class;
}

sub send {
    my ($self, $name, $type) = @_;
    my $packet = Net::DNS::Packet->new($name, $type);
    my $answers = $self->{records}{ lc($name =~ s/\.$//r) };
    if ($answers) {
        $packet->header->rcode('NOERROR');
        $packet->push(answer => grep { $_->type eq $type } @$answers);
    } else {
        $packet->header->rcode('NXDOMAIN');
    }
    return $packet;
}

sub errorstring { return $_[0]{error} }

package main;

@ARGV == 1 or die "usage: $0 ZONEFILE < MESSAGE\n";
Mail::DKIM::DNS::resolver(ZoneResolver->new($ARGV[0]));

binmode STDIN;
my $dkim = Mail::DKIM::Verifier->new();
while (my $line = <STDIN>) {
    $line =~ s/\r?\n\z/\r\n/;    # Mail::DKIM wants CRLF line endings
    $dkim->PRINT($line);
}
$dkim->CLOSE();

foreach my $signature ($dkim->signatures) {
    printf "SIGNATURE d=%s s=%s a=%s %s\n", $signature->domain, $signature->selector,
      $signature->algorithm, $signature->result_detail;
}
printf "RESULT %s\n", $dkim->result_detail;
exit 0;
